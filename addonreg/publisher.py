"""Static publishing: the read resources as files that nginx (or a CDN) serves.

``addonreg publish DIR`` writes, for every add-on, the body of
``GET /v1/addons/{addon_id}/files`` and, for every registered file, the body of
``GET /v1/addons/{addon_id}/files/{sha256}``; ``--follow`` then tails the
change feed and keeps the tree up to date.

Layout (``config/nginx.conf``, static mode, serves ``DIR/current``)::

    DIR/current -> trees/<build>          the tree nginx serves (a symlink)
    DIR/trees/<build>/v1/addons/<addon_id>/files/<sha256>      a file's record
    DIR/trees/<build>/v1/addons/<addon_id>/files/index.json    the add-on's list
    DIR/state.json                        {"serial", "tree", "source"}: where to resume

Guarantees:

* No reader sees a partial file: every file is written beside its target and
  renamed over it. A full build goes into a new tree and the ``current``
  symlink is swapped in one rename, so a rebuild is never half visible.
* Bodies are byte for byte what the service answers for the same resource
  at the same serial: file bodies are rendered by the service's own
  :func:`addonreg.media.file_body`, add-on lists are the service's own answer
  (source ``--from URL``) or rendered by :func:`addonreg.media.addon_files_body`
  from storage.
* A revoked file's static copy is removed, so its request falls through to
  the service, which answers ``410``. Unknown files are never in the tree.
* Nothing is written outside ``DIR``: a service's feed is checked record by
  record (:mod:`addonreg.sources`), and, should anything get past that, every
  path is resolved and refused unless it stays inside the tree. A feed that
  breaks the contract stops the publisher (exit 1, one line naming the
  record's serial) with nothing of its page written; a build it interrupts
  leaves the served tree as it was.
* The last applied serial is saved (atomically) after each applied page, so
  a restarted publisher resumes where it stopped. A feed that went backwards
  (storage reset or restored: its last serial is below ours) or that stayed
  unreachable longer than ``max_outage`` triggers a full rebuild rather than
  silent drift.

Several publishers (one per nginx host) can follow one service: each keeps
its own directory and state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
import uuid
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from . import media
from .atomicfile import write_atomically
from .sources import (
    FeedError,
    FeedRejected,
    FeedSource,
    FeedWentBackwards,
    ServiceSource,
    StorageSource,
    feed_source,
)
from .status import REGISTERED
from .storage import BackendError, Record

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "StaticTree",
    "FeedSource",
    "StorageSource",
    "ServiceSource",
    "FeedError",
    "FeedRejected",
    "OutsideTree",
    "Publisher",
]

log = logging.getLogger("addonreg.publisher")

PAGE = 5000
LIST_NAME = "index.json"


# The tree ----------------------------------------------------------------------


class OutsideTree(FeedRejected):
    """A path that would leave the tree once resolved (``..``, ``/``, a symlink)."""


class StaticTree:
    """One published tree under ``root`` (a directory nginx can serve).

    Every path it writes or removes is checked to resolve inside ``root``
    (:class:`OutsideTree` otherwise). Identifiers that passed
    :mod:`addonreg.ids` can never leave it (an id has no ``/`` and is never
    ``.`` or ``..``); the check is defence in depth against whatever did not
    pass through there, and against a symlink planted in the tree.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.bytes = 0  # of the bodies written
        self._real_root = os.path.realpath(root)
        self._dirs: Set[str] = set()  # made and checked
        self._addon_dirs: Dict[str, str] = {}  # add-on id -> its checked directory

    def _addon_dir(self, addon_id: str) -> str:
        """The add-on's directory, once it resolves inside the tree.

        Resolved once per add-on (realpath costs a syscall per component; a
        build writes millions of files into far fewer directories)."""
        directory = self._addon_dirs.get(addon_id)
        if directory is None:
            directory = os.path.join(self.root, "v1", "addons", addon_id, "files")
            self._inside(directory)
            self._addon_dirs[addon_id] = directory
        return directory

    def _inside(self, directory: str) -> None:
        real = os.path.realpath(directory)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise OutsideTree(f"{directory} resolves to {real}, outside {self.root}")

    @staticmethod
    def _name(name: str) -> str:
        # A plain name cannot leave its directory, and a symlink at the leaf is
        # replaced or unlinked itself, never followed (os.replace, os.unlink).
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise OutsideTree(f"{name!r} is not a file name")
        return name

    def file_path(self, addon_id: str, sha256: str) -> str:
        return os.path.join(self._addon_dir(addon_id), self._name(sha256))

    def list_path(self, addon_id: str) -> str:
        return os.path.join(self._addon_dir(addon_id), LIST_NAME)

    def write(self, path: str, body: bytes) -> None:
        """Atomically replace ``path`` (one of :meth:`file_path`, :meth:`list_path`) with
        ``body``."""
        directory = os.path.dirname(path)
        if directory not in self._dirs:
            os.makedirs(directory, exist_ok=True)
            self._inside(directory)  # again, now that it exists
            self._dirs.add(directory)
        # Not fsynced: the tree is rebuilt from the feed after a crash (the
        # state file says from where), and a build writes millions of files.
        write_atomically(path, body, durable=False)
        self.bytes += len(body)

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def check(self, records: List[Record]) -> None:
        """Raise :class:`OutsideTree` unless every path of ``records`` stays in the tree
        (before a page is applied, so nothing of a refused page is written)."""
        for record in records:
            try:
                self.file_path(record.addon_id, record.sha256)
                self.list_path(record.addon_id)
            except OutsideTree as exc:
                raise OutsideTree(
                    f"the record at serial {record.serial}: {exc}; nothing of its page was written"
                ) from None

    def put_record(self, record: Record) -> None:
        """A file's static copy follows its record: written if registered, removed if not."""
        path = self.file_path(record.addon_id, record.sha256)
        if record.status == REGISTERED:
            self.write(path, media.file_body(record))
        else:
            self.remove(path)

    def put_list(self, addon_id: str, body: Optional[bytes]) -> None:
        """The add-on's list body; None: the add-on has no files (404 from the service)."""
        if body is None:
            self.remove(self.list_path(addon_id))
        else:
            self.write(self.list_path(addon_id), body)


# The publisher ---------------------------------------------------------------------


class Publisher:
    """Builds and follows the static tree under ``directory`` from ``source``."""

    def __init__(
        self,
        directory: str,
        source: FeedSource,
        *,
        interval: float = 0.2,
        max_outage: float = 60.0,
        progress: bool = True,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.source = source
        self.interval = interval
        self.max_outage = max_outage
        self.progress = progress
        self.serial = 0
        self.tree: Optional[StaticTree] = None
        self.stats = {"rebuilds": 0, "files_written": 0, "changes_applied": 0}
        self._stopping = asyncio.Event()

    # State --------------------------------------------------------------------

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, "state.json")

    def load_state(self) -> Optional[dict]:
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            return None
        name = state.get("tree")
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name:
            return None
        tree = os.path.join(self.directory, "trees", name)
        if not isinstance(state.get("serial"), int) or not os.path.isdir(tree):
            return None
        if state.get("source") != self.source.name:
            return None  # another feed: its serials mean nothing here
        return state

    @property
    def live(self) -> StaticTree:
        """The tree being served (after :meth:`start`)."""
        if self.tree is None:
            raise RuntimeError("no tree yet: start() first")
        return self.tree

    def save_state(self) -> None:
        data = json.dumps(
            {
                "serial": self.serial,
                "tree": os.path.basename(self.live.root),
                "source": self.source.name,
            }
        ).encode()
        write_atomically(self.state_path, data)

    # Full build -----------------------------------------------------------------

    async def build(self) -> int:
        """Publish everything into a new tree, swap it in, drop the old one; files written."""
        started = time.monotonic()
        os.makedirs(os.path.join(self.directory, "trees"), exist_ok=True)
        name = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        tree = StaticTree(os.path.join(self.directory, "trees", name))
        os.makedirs(tree.root)
        try:
            since, written, addons = await self._fill(tree)
        except BaseException:
            # Never swapped in: what nginx serves stays as it was.
            shutil.rmtree(tree.root, ignore_errors=True)
            raise
        old = self.tree
        self.tree, self.serial = tree, since
        self._swap_current(tree)
        self.save_state()
        if old is not None and old.root != tree.root:
            shutil.rmtree(old.root, ignore_errors=True)
        self._remove_stale_trees()
        elapsed = time.monotonic() - started
        self.stats["rebuilds"] += 1
        self.stats["files_written"] += written
        block = os.statvfs(tree.root).f_frsize  # each small file takes at least a block
        summary = (
            f"published {written} files for {len(addons)} add-ons in {elapsed:.2f} s: "
            f"{written / elapsed if elapsed else 0:,.0f} files/s (serial {self.serial}); "
            f"{tree.bytes / 1e6:,.1f} MB of bodies, about {written * block / 1e6:,.0f} MB "
            f"on disk in {block}-byte blocks"
        )
        if self.progress:
            print(summary, file=sys.stderr)
        else:
            log.info("%s", summary)
        return written

    async def _fill(self, tree: StaticTree) -> Tuple[int, int, Dict[str, Dict[str, Record]]]:
        """Write every record and add-on list of the feed into ``tree``; the serial
        reached, the files written, the add-ons."""
        since, written = 0, 0
        addons: Dict[str, Dict[str, Record]] = {}
        from tqdm import tqdm

        # Progress in serials (the feed's last one is the total when the source
        # knows it: then the bar has an ETA), then in add-on lists.
        with tqdm(
            total=await self.source.last_serial(),
            unit="serials",
            file=sys.stderr,
            disable=not self.progress,
            desc="publish files",
        ) as bar:
            while True:
                records, next_since = await self.source.changes(since, PAGE)
                if not records:
                    break
                tree.check(records)
                for record in records:
                    tree.put_record(record)
                    written += record.status == REGISTERED
                    addons.setdefault(record.addon_id, {})[record.sha256] = record
                bar.update(next_since - since)
                since = next_since
        with tqdm(
            total=len(addons),
            unit="lists",
            file=sys.stderr,
            disable=not self.progress,
            desc="publish lists",
        ) as bar:
            for addon_id, files in addons.items():
                tree.put_list(
                    addon_id,
                    media.addon_files_body(addon_id, [files[sha] for sha in sorted(files)]),
                )
                written += 1
                bar.update(1)
        return since, written, addons

    def _swap_current(self, tree: StaticTree) -> None:
        link = os.path.join(self.directory, "current")
        tmp = link + ".tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.relpath(tree.root, self.directory), tmp)
        os.replace(tmp, link)

    def _remove_stale_trees(self) -> None:
        trees = os.path.join(self.directory, "trees")
        for name in os.listdir(trees):
            path = os.path.join(trees, name)
            if path != self.live.root:
                shutil.rmtree(path, ignore_errors=True)

    # Following ---------------------------------------------------------------------

    async def apply_page(self) -> int:
        """Apply the next page of changes; how many records it held."""
        records, next_since = await self.source.changes(self.serial, PAGE)
        if next_since < self.serial or any(r.serial <= self.serial for r in records):
            raise FeedWentBackwards(f"the feed went backwards ({next_since} < {self.serial})")
        if not records:
            return 0
        self.live.check(records)
        dirty: Dict[str, None] = {}
        for record in records:
            self.live.put_record(record)
            dirty[record.addon_id] = None
        for addon_id in dirty:
            self.live.put_list(addon_id, await self.source.addon_list(addon_id))
        self.serial = next_since
        self.save_state()
        self.stats["changes_applied"] += len(records)
        self.stats["files_written"] += len(records) + len(dirty)
        log.info(
            "applied %d change(s) of %d add-on(s), up to serial %d",
            len(records),
            len(dirty),
            self.serial,
        )
        return len(records)

    async def start(self, rebuild: bool = False) -> None:
        """Resume the saved tree, or build one."""
        await self.source.open()
        state = None if rebuild else self.load_state()
        if state is not None:
            self.tree = StaticTree(os.path.join(self.directory, "trees", state["tree"]))
            self.serial = state["serial"]
            self._swap_current(self.tree)
            last = await self.source.last_serial()
            if last is not None and last < self.serial:
                log.warning(
                    "feed reset (its last serial %d < ours %d): full rebuild", last, self.serial
                )
                await self.build()
            else:
                log.info("resuming from serial %d", self.serial)
        else:
            await self.build()

    async def follow(self) -> None:
        """Apply changes until :meth:`stop`; rebuild when the feed is lost or goes backwards."""
        failing_since: Optional[float] = None
        while not self._stopping.is_set():
            try:
                if failing_since is not None and time.monotonic() - failing_since > self.max_outage:
                    log.warning("feed lost for over %.0f s: full rebuild", self.max_outage)
                    await self.build()
                    failing_since = None
                    continue
                last = await self.source.last_serial()
                if last is not None and last < self.serial:
                    raise FeedWentBackwards(f"the feed went backwards ({last} < {self.serial})")
                applied = await self.apply_page()
                if failing_since is not None:
                    log.info("feed back after %.1f s", time.monotonic() - failing_since)
                failing_since = None
                if applied == PAGE:
                    continue  # more waiting
            except FeedRejected:
                raise  # asking again gets the same answer: stop, saying why
            except FeedWentBackwards as exc:
                log.warning("%s: full rebuild", exc)
                await self.build()
                continue
            except FeedError as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("feed unavailable: %s", exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self.source.close()


async def run_publish(
    settings: Settings,
    directory: str,
    *,
    follow: bool,
    source_url: Optional[str],
    rebuild: bool,
    interval: float,
    progress: bool,
) -> int:
    """``addonreg publish``: the exit code."""
    import signal

    try:
        source = feed_source(settings, source_url)
    except FeedError as exc:
        print(f"addonreg publish: {exc}", file=sys.stderr)
        return 2
    publisher = Publisher(directory, source, interval=interval, progress=progress)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, publisher.stop)
    try:
        await publisher.start(rebuild=rebuild)
        if follow:
            log.info("following %s from serial %d", source.name, publisher.serial)
            await publisher.follow()
    except (FeedError, BackendError, OSError) as exc:
        print(f"addonreg publish: {exc}", file=sys.stderr)
        return 1
    finally:
        await publisher.close()
    return 0

from setuptools import find_packages, setup

setup(
    name="addonreg",
    version="0.1.0",
    description="Add-on file registration service: is this add-on file registered with AMO?",
    # The client library (client/, its own distribution "addonreg-client") is
    # packaged here too, so that `pip install -e .` on a clean checkout gives the
    # server and its commands everything, with no index lookup for the client.
    packages=find_packages(include=["addonreg", "addonreg.*"]) + ["addonreg_client"],
    package_dir={"addonreg_client": "client/addonreg_client"},
    # The OpenAPI document GET /__api__ serves (a link to docs/openapi.yaml).
    package_data={"addonreg": ["openapi.yaml"]},
    python_requires=">=3.11",
    install_requires=[
        "tornado>=6.4,<7",
        "aiomysql>=0.2,<0.4",
        # PyMySQL 1.2 removed escape_bytes_prefixed, which aiomysql 0.3 still calls
        # for every bytes parameter (our BINARY(32) hashes).
        "PyMySQL>=1.1,<1.2",
        "aiosqlite>=0.20,<0.23",
        "cachetools>=5.3,<9",
        "msgpack>=1.0,<2",
        # Bulk lookup bodies decoded and typed in one C pass (addonreg/inputs.py):
        # half msgpack-python's time for a 100-file MessagePack body.
        "msgspec>=0.18,<0.24",
        "orjson>=3.9,<4",
        "tqdm>=4.66,<5",
        # redis-py 8.2 hangs RedisBus.close() while the pub/sub client is
        # reconnecting (tests/bus/test_redis.py::test_close_while_reconnecting_returns_promptly).
        "redis>=5.0,<8",
        "mohawk>=1.1,<2",
        "prometheus-client>=0.20,<1",
        "uvloop>=0.19,<0.24; sys_platform != 'win32'",
        # addonreg.filter: numpy 2 for bitwise_count (the layers' parity), the
        # index's Ed25519 signature.
        "numpy>=2.0,<3",
        "cryptography>=42,<51",
        # GET /__api__ as JSON; addonreg.client and its commands (check, register…).
        "PyYAML>=6.0,<7",
        "httpx>=0.27,<0.29",
        "httpcore>=1.0,<2",  # addonreg_client's deadline-bound sockets (httpx's own)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-asyncio>=1.0,<2",
            "hypothesis>=6.100,<7",
            "supervisor>=4.2,<5",
            # make test runs them first and fails on a finding (pyproject.toml).
            "ruff>=0.6,<1",
            "mypy>=1.10,<2",
            "types-cachetools>=5.3",
            "types-tqdm>=4.66",
            "types-PyYAML>=6.0",
            # Every test response checked against docs/openapi.yaml; schemathesis on a server.
            "openapi-core>=0.19,<0.24",
            "openapi-spec-validator>=0.7,<0.9",
            "schemathesis>=4.0,<5",
        ],
        "deploy": [
            "supervisor>=4.2,<5",
        ],
        "bench": [
            "matplotlib>=3.8,<4",
            # bench/run.py --profile.
            "py-spy>=0.3.14,<0.5",
            # bench/filter.py: the format AMO ships today, beside ours.
            "filtercascade>=0.4,<0.5",
            # bench/run.py: CPU time and RSS of the processes under load.
            "psutil>=5.9,<8",
        ],
    },
    entry_points={"console_scripts": ["addonreg = addonreg.cli:main"]},
)

from setuptools import find_packages, setup

setup(
    name="addonreg",
    version="0.1.0",
    description="Add-on file registration service: is this add-on file registered with AMO?",
    packages=find_packages(include=["addonreg", "addonreg.*"]),
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
        "orjson>=3.9,<4",
        "tqdm>=4.66,<5",
        "redis>=5.0,<9",
        "mohawk>=1.1,<2",
        "prometheus-client>=0.20,<1",
        "uvloop>=0.19,<0.24; sys_platform != 'win32'",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-asyncio>=1.0,<2",
            "hypothesis>=6.100,<7",
            "supervisor>=4.2,<5",
        ],
        "deploy": [
            "supervisor>=4.2,<5",
        ],
        "bench": [
            "matplotlib>=3.8,<4",
            # bench/run.py --profile.
            "py-spy>=0.3.14,<0.5",
            # bench/run.py: CPU time and RSS of the processes under load.
            "psutil>=5.9,<8",
        ],
    },
    entry_points={"console_scripts": ["addonreg = addonreg.cli:main"]},
)

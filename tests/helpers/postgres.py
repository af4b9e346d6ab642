"""A throwaway PostgreSQL server for a test: initdb in a temporary folder, started on a free local port.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user (Debian's
package creates it) through `runuser`. `find_postgres()` says why no server can be started, so the
test is skipped with that reason instead of failing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_postgres() -> tuple[Path | None, str]:
    """(the folder holding initdb and pg_ctl, "") or (None, why not)."""
    found = shutil.which("initdb")
    candidates = [Path(os.path.realpath(found)).parent] if found else []  # a symlink in /usr/local/bin
    # Debian keeps them out of PATH: /usr/lib/postgresql/<version>/bin (newest first).
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            if os.geteuid() == 0 and shutil.which("runuser") is None:
                return None, "running as root without runuser (PostgreSQL will not run as root)"
            if os.geteuid() == 0:
                try:
                    import pwd

                    pwd.getpwnam("postgres")
                except KeyError:
                    return None, "running as root and there is no 'postgres' OS user to run the server as"
            return folder, ""
    return None, "PostgreSQL is not installed (no initdb/pg_ctl; on Debian: apt-get install -y postgresql)"


class PostgresServer:
    """`with PostgresServer() as url:` a database `hpo` on 127.0.0.1:<free port>, removed afterwards."""

    def __init__(self, bin_dir: Path, database: str = "hpo"):
        self.bin = bin_dir
        self.database = database
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hf-finetune-pg-"))
        self.data = self.root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def __enter__(self) -> str:
        if os.geteuid() == 0:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                      "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        except subprocess.CalledProcessError as exc:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            self.__exit__()
            raise RuntimeError(f"PostgreSQL did not start: {exc.cmd}: {exc.stderr}\n{log}") from None
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def __exit__(self, *exc: object) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

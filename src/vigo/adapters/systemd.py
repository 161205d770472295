"""systemd: write unit files under a root, systemctl, systemd-analyze verify. Decides nothing."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from vigo.adapters import fs
from vigo.adapters.run import Runner

UNIT_DIR = Path("etc/systemd/system")


class Systemd:
    def __init__(self, runner: Runner, root: Path = Path("/")) -> None:
        self.runner = runner
        self.root = root

    @property
    def unit_dir(self) -> Path:
        return self.root / UNIT_DIR

    @property
    def live(self) -> bool:
        """True when the units go to this machine's own root."""
        return self.root.resolve() == Path("/")

    def running(self) -> bool:
        """True when systemd is PID 1 here (sd_booted(3): /run/systemd/system exists)."""
        return self.live and Path("/run/systemd/system").is_dir()

    def write(self, units: Mapping[str, str]) -> dict[str, bool]:
        """Write each unit (mode 0644, atomically) where its text differs. Returns name ->
        whether it was written."""
        out = {}
        for name, text in units.items():
            path = self.unit_dir / name
            try:
                same = path.read_text() == text
            except FileNotFoundError:
                same = False
            if not same:
                fs.atomic_write(path, text.encode(), mode=0o644)
            out[name] = not same
        return out

    def verify(self, units: Mapping[str, str]) -> str:
        """`systemd-analyze verify` on the units' texts, in a temp folder (so nothing broken is
        ever written): '' when clean, else its complaints. It exits 0 on some (an unknown key
        is only a warning), so any output counts."""
        with tempfile.TemporaryDirectory(prefix="vigo-units-") as tmp:
            for name, text in units.items():
                (Path(tmp) / name).write_text(text)
            res = self.runner.run(("systemd-analyze", "verify",
                                   *(str(Path(tmp) / n) for n in units)), timeout=60)
        text = "\n".join(x for x in (res.stdout.strip(), res.stderr.strip()) if x)
        if res.ok and not text:
            return ""
        return text or f"systemd-analyze verify exited {res.returncode}"

    def has_analyze(self) -> bool:
        return self.runner.run(("systemd-analyze", "--version"), timeout=30).returncode != 127

    def daemon_reload(self) -> str:
        res = self.runner.run(("systemctl", "daemon-reload"), timeout=60)
        return "" if res.ok else res.error(3)

    def enable(self, unit: str, now: bool) -> str:
        """Enable (and start, when `now`) a unit. Under another root, or without a running
        systemd, only the [Install] symlinks are made."""
        if not self.live:
            argv: tuple[str, ...] = ("systemctl", f"--root={self.root}", "enable", unit)
        elif now:
            argv = ("systemctl", "enable", "--now", unit)
        else:
            argv = ("systemctl", "enable", unit)
        res = self.runner.run(argv, timeout=60)
        return "" if res.ok else res.error(3)

    def is_enabled(self, unit: str) -> bool:
        root = () if self.live else (f"--root={self.root}",)
        res = self.runner.run(("systemctl", *root, "is-enabled", unit), timeout=30)
        return res.ok and res.stdout.strip() == "enabled"

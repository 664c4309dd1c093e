"""BotProcess: `python -m bot` as its own process, in a sandbox of its own, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path


class BotProcess:
    """`python -m bot` in a sandbox of its own: working directory, HOME and TMPDIR under tmp_path."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.dirs = [tmp_path / "work", tmp_path / "home", tmp_path / "tmp"]
        for folder in self.dirs:
            folder.mkdir()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dirs[1]),
            "TMPDIR": str(self.dirs[2]),
            **env,
        }
        self.output: list[str] = []
        self._listening = asyncio.Event()
        self._new_output = asyncio.Condition()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=self.dirs[0],
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            text = line.decode(errors="replace")
            self.output.append(text)
            if "listening over" in text:
                self._listening.set()
            async with self._new_output:
                self._new_output.notify_all()

    async def wait_listening(self) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout=30)

    async def wait_for_output(self, text: str, count: int = 1, timeout: float = 30) -> list[str]:
        """The lines holding `text`, once there are `count` of them."""

        def found() -> list[str]:
            return [line for line in self.output if text in line]

        try:
            async with asyncio.timeout(timeout), self._new_output:
                await self._new_output.wait_for(lambda: len(found()) >= count)
        except TimeoutError:
            raise AssertionError(
                f"{count} line(s) with {text!r} not seen; output:\n{''.join(self.output)}"
            ) from None
        return found()

    async def stop(self, *, signal_first: bool = True) -> str:
        if signal_first and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), timeout=30)
        await self._reader
        return "".join(self.output)

    def written_files(self) -> str:
        contents = []
        for folder in self.dirs:
            for path in folder.rglob("*"):
                if path.is_file():
                    contents.append(f"{path}\n{path.read_bytes().decode(errors='replace')}")
        return "\n".join(contents)


async def run_to_exit(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """`python -m bot` expected to stop by itself (a refusal at start): its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:  # it should have stopped by itself: the test fails, nothing is left
            process.send_signal(signal.SIGTERM)
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()

"""``python -m emulator.engines.fake --port P [--host 127.0.0.1]``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from emulator.engines.fake.app import FakeEngine
from emulator.engines.fake.http11 import start_server
from emulator.engines.fake.knobs import KnobsError, load_knobs


async def serve(host: str, port: int) -> None:
    engine = FakeEngine(load_knobs())
    server = await start_server(engine.handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    knobs = engine.knobs
    print(f"INFO:     fake engine (vLLM {engine.metrics.model_name!r}, max_num_seqs={knobs.concurrency}) "
          f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print("INFO:     fake engine shutting down", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.engines.fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port))
    except KnobsError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the stand-in server: ``python -m batches.standin --port 8765``."""

from __future__ import annotations

import argparse
import signal

from .server import StandinServer


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible Batch API stand-in server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--step-seconds", type=float, default=5.0,
                        help="Seconds between status steps (validating, in_progress, finalizing, completed).")
    parser.add_argument("--api-key", default=None, help="Require this bearer token (default: accept any).")
    args = parser.parse_args()
    server = StandinServer((args.host, args.port), step_seconds=args.step_seconds, api_key=args.api_key)
    print(f"Batch API stand-in on http://{args.host}:{server.server_address[1]}/v1 (Ctrl+C to stop)", flush=True)
    # A parent process stops us with SIGTERM (see StandinProcess.stop): leave as cleanly as on Ctrl+C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

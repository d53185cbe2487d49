"""Explore a trained VAE in the browser: ``python3 explore.py --resume CHECKPOINT`` serves a local page
with a slider per latent dimension, the latent map, interpolations and uploads (serving/).
See ``python3 explore.py --help``."""
from __future__ import annotations

import argparse
import sys

from config.flag_types import int_in
from config.parsers import OneLineParser, run_cli


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="explore.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Serve a local page to explore a trained VAE: sliders per latent dimension, "
                                  "the latent map, interpolations, uploads. Any checkpoint, no other flags.")
    p.add_argument("--resume", required=True, metavar="CKPT", help="the checkpoint to explore (any family)")
    p.add_argument("--port", type=int_in(0, 65535), default=0, help="TCP port; 0: a free one")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (IPv4 or IPv6, e.g. ::1); anything but a loopback address lets other "
                        "machines use the page. Requests must name it (or localhost) in their Host header")
    p.add_argument("--threads", type=int_in(1, 256), default=1,
                   help="torch threads for the page's decodes (loading uses all cores); see docs/explore.md")
    p.add_argument("--data_root", default="",
                   help="where the run's dataset is, if not where it was trained from (the checkpoint says)")
    return p


def main(args: argparse.Namespace) -> None:
    import torch  # here, with the server: --help needs neither

    from serving.app import make_server, url_of
    from serving.decoding import Explorer

    server = make_server(args.host, args.port)  # the port first: refused before the model loads
    try:
        server.explorer = Explorer.from_checkpoint(args.resume, args.data_root or None)
        # A page's decodes are 1 to 81 small images: one thread answers them fastest, and on cores shared with
        # other jobs two threads wait on each other (benchmarks/explore_latency.md)
        torch.set_num_threads(args.threads)
        if not server.ip.is_loopback:
            print(f"explore.py: note: serving on {args.host}: other machines can reach the page", file=sys.stderr)
        print(f"explore.py: {server.explorer.model.family}; open {url_of(server)}  (Ctrl-C stops it)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nexplore.py: stopped", file=sys.stderr)
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser()))

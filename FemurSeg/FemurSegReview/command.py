"""``femurseg review IMAGE [SEGMENTATION]``: the command line of the review app.

The core's ``femurseg`` finds this command through the ``femurseg.commands`` entry point (the
core never imports this package). Everything is checked before the server starts: a bad
argument, a broken or mismatched segmentation or an output that exists gives one ``error:``
line and exit code 2. The web stack (trame-slicer, the ``[review]`` extra) is imported only
once the checks have passed.
"""

from __future__ import annotations

import secrets

from FemurSegLib.errors import InputError

LOCALHOST = "127.0.0.1"


def register(subparsers) -> None:
    """Add the ``review`` subcommand to ``femurseg``'s subparsers."""
    from FemurSegLib.cli import model_options, stl_smoothing_option

    r = subparsers.add_parser("review", help="check and correct a segmentation in the browser "
                              "(needs the [review] extra)")
    r.add_argument("image", metavar="IMAGE", help="the image (.nii.gz, .nii, .nrrd, .mha)")
    r.add_argument("segmentation", metavar="SEGMENTATION", nargs="?",
                   help="its .seg.nrrd (from femurseg segment); without it the page can run "
                        "the model")
    r.add_argument("-o", "--output", metavar="DIR", help="folder the corrected segmentation, "
                   "STL surfaces and volumes are saved into (default: <case>_review beside the "
                   "segmentation or image)")
    r.add_argument("--probabilities", metavar="PATH", help="the probability map of the "
                   "segmentation (femurseg segment --probabilities): lists the slices to check")
    r.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    r.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1 only; "
                   "any other needs the printed one-time token in the URL)")
    r.add_argument("--no-browser", action="store_true", help="do not open a browser")
    r.add_argument("--idle-timeout", type=float, default=0, metavar="S", help="stop after S "
                   "seconds without a connected browser (default 0: run until Ctrl-C)")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (also "
                   "the segmentation under review, if the output folder holds it)")
    model_options(r)  # for "Run the model" on the page: as femurseg segment runs it
    stl_smoothing_option(r)
    r.set_defaults(func=run)


def run(args) -> int:
    from FemurSegLib.surface import check_sigma_voxels

    from .session import open_session

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0..65535, not {args.port}")
    if not args.idle_timeout >= 0:
        raise InputError(f"--idle-timeout must be >= 0 seconds, not {args.idle_timeout}")
    session = open_session(args.image, args.segmentation, output_dir=args.output,
                           probabilities=args.probabilities, overwrite=args.overwrite,
                           stl_smoothing=check_sigma_voxels(args.stl_smoothing))
    factory = None
    if args.segmentation is None:
        from FemurSegLib.modelfolder import find_model

        model_dir = find_model(args.model)  # a missing model is an error before the server

        def factory():
            from FemurSegLib.inference import Segmenter

            return Segmenter.from_folder(model_dir, device=args.device, engine=args.engine,
                                         tta=args.tta, threads=args.threads)
    host = args.host or LOCALHOST
    token = None if host == LOCALHOST else secrets.token_urlsafe(24)
    allowed = {LOCALHOST, "localhost"} if host == LOCALHOST else None
    try:
        from .server import ReviewApp
    except ImportError as exc:
        raise InputError(f"femurseg review needs the review extra (pip install "
                         f"'femurseg[review]'): {exc}") from None
    app = ReviewApp(session, segmenter_factory=factory, token=token, allowed_hosts=allowed)
    app.start(host=host, port=args.port, open_browser=not args.no_browser, token=token,
              idle_timeout=args.idle_timeout)
    return 0

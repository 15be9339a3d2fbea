"""The ``stmorph`` command: ``stmorph demo``, ``stmorph eps``, ``stmorph predict``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

# Each command's one-line help (listed by `stmorph --help`) and description (`stmorph <command> --help`).
_HELP = {
    "demo": "run the whole story on the bundled HER2ST sections",
    "eps": "EPS per gene and SPS of slices saved as .h5ad",
    "predict": "predict a slice's expression from reference slices",
}
TRAINED_OVER_EPOCHS = ("mlp", "bleep", "heclip", "stnet")
"""The methods ``--epochs`` applies to."""
_DESCRIPTION = {
    "demo": "Embed the spots, compute EPS/SPS per section, predict each section from the others (auto: the "
    "cross-validated best of knn and ridge, and BLEEP), "
    "evaluate, and write results.h5ad per section, eps.csv, metrics.csv, PNGs and report.html.",
    "eps": "Compute EPS/SPS on each slice (expression prepared with st.pp.prepare_expression unless --prepared) and "
    "write eps.csv (genes × slices) and sps.csv to the output folder.",
    "predict": "Fit a method on the reference slice(s) and predict the query; writes the query with "
    "layers['predicted_<method>'] and, with --evaluate, the metrics.",
}


def _add_output_arguments(parser: argparse.ArgumentParser, out_folder: str | None, *, use_rep: bool = False) -> None:
    """The arguments the commands share: ``--use-rep`` (only when ``use_rep``) and ``--out``.

    Parameters
    ----------
    parser
        The subcommand's parser.
    out_folder
        Default output folder of ``--out``; ``None`` makes ``--out`` a required output ``.h5ad``.
    use_rep
        Add the required ``--use-rep``: the ``obsm`` key of the image embeddings.
    """
    if use_rep:
        parser.add_argument("--use-rep", required=True, help="obsm key of the image embeddings, e.g. X_default")
    if out_folder is None:
        parser.add_argument("--out", required=True, help="output .h5ad")
    else:
        parser.add_argument("--out", default=out_folder, help="output folder (default: %(default)s)")


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    _add_output_arguments(demo, "stmorph_demo")
    demo.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5"], help="HER2ST sections (≥ 2)")
    demo.add_argument("--data-dir", default=None, help="folder holding her2st/ (default: $STMORPH_DATA_DIR)")
    demo.add_argument("--encoder", default="default", help="image encoder of st.tl.embed (default: %(default)s)")
    demo.add_argument("--methods", nargs="+", default=["auto", "bleep"], help="prediction methods")
    demo.add_argument("--n-genes", type=int, default=2000, help="genes to predict, most expressed first; 0 = all")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs of torch methods (default: paper's)")
    demo.add_argument(
        "--torch-threads", type=int, default=1, help="torch CPU threads, 0 = torch's default (default: %(default)s)"
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _eps_arguments(eps: argparse.ArgumentParser) -> None:
    eps.add_argument("inputs", nargs="+", help=".h5ad files, one per slice, with image embeddings in obsm")
    _add_output_arguments(eps, "stmorph_eps", use_rep=True)
    eps.add_argument("--n-neighbors", type=int, default=5, help="neighbours of the image graph (default: 5)")
    eps.add_argument("--prepared", action="store_true", help="X already holds prepared (scaled) expression")


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("query", help=".h5ad of the slice to predict")
    predict.add_argument("--reference", nargs="+", required=True, help=".h5ad file(s) of the training slices")
    predict.add_argument("--method", default="ridge", help="one of st.tl.list_methods() (default: %(default)s)")
    predict.add_argument("--layer", default=None, help="expression layer to learn (default: X)")
    _add_output_arguments(predict, None, use_rep=True)
    predict.add_argument("--evaluate", action="store_true", help="also score the prediction against the measured")
    predict.add_argument("--params", default="{}", help="method options as JSON, e.g. '{\"epochs\": 20}'")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stmorph", description="EPS/SPS and image-to-expression prediction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add_arguments in (("demo", _demo_arguments), ("eps", _eps_arguments), ("predict", _predict_arguments)):
        add_arguments(sub.add_parser(name, help=_HELP[name], description=_DESCRIPTION[name]))
    return parser


def _run_demo(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files; no display needed
    from ._demo import DemoSettings, run_demo

    kwargs = {"epochs": args.epochs} if args.epochs else {}
    settings = DemoSettings(
        encoder=args.encoder,
        methods=tuple(args.methods),
        n_genes=args.n_genes or None,
        method_kwargs={m: kwargs for m in args.methods if m in TRAINED_OVER_EPOCHS},
        torch_threads=args.torch_threads or None,
    )
    report = run_demo(
        args.out, sections=args.sections, data_dir=args.data_dir, settings=settings, progress=not args.no_progress
    )
    print(f"stmorph demo finished; open the report: {report.resolve()}")


def _slice_names(paths: Sequence[str]) -> list[str]:
    """File stems as slice names; the parent folder's name where stems repeat (``C2/results.h5ad``)."""
    stems = [Path(p).stem for p in paths]
    return [Path(p).parent.name if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def _run_eps(args: argparse.Namespace) -> None:
    import anndata as ad

    from . import pp, tl

    slices = dict(zip(_slice_names(args.inputs), (ad.read_h5ad(p) for p in args.inputs)))
    if not args.prepared:
        for adata in slices.values():
            pp.prepare_expression(adata)
    summary, eps = tl.sps(slices, use_rep=args.use_rep, n_neighbors=args.n_neighbors)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eps.to_csv(out / "eps.csv", index_label="gene")
    summary.to_csv(out / "sps.csv", index=False)
    print(summary.to_string(index=False))
    print(f"wrote {out / 'eps.csv'} and {out / 'sps.csv'}")


def _run_predict(args: argparse.Namespace) -> None:
    import anndata as ad

    from . import tl
    from .tl._evaluate import evaluation_table

    query = ad.read_h5ad(args.query)
    references = [ad.read_h5ad(p) for p in args.reference]
    tl.predict(query, references, method=args.method, use_rep=args.use_rep, layer=args.layer, **json.loads(args.params))
    if args.evaluate:
        tl.evaluate(query, f"predicted_{args.method}")
        print(evaluation_table(query, args.method).to_string())
    query.write_h5ad(args.out)
    print(f"wrote {args.out} with layers['predicted_{args.method}']")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stmorph`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    {"demo": _run_demo, "eps": _run_eps, "predict": _run_predict}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

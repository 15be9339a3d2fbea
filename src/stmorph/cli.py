"""The ``stmorph`` command: ``demo``, ``embed``, ``eps``, ``predict``, ``atlas`` and ``benchmark``.

``embed``, ``eps`` and ``predict`` take raw inputs too (a Space Ranger or Visium HD folder, a
SpatialData ``.zarr``, a HEST-1k sample, an ``.h5ad`` with patches; :mod:`stmorph._inputs`): their
patches are cut and embedded first. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ._validation import check_choice, check_int, check_path

if TYPE_CHECKING:
    import anndata as ad

# Each command's one-line help (listed by `stmorph --help`) and description (`stmorph <command> --help`).
_HELP = {
    "demo": "run the whole story on the bundled HER2ST sections",
    "embed": "image embeddings of a slide (Space Ranger, Visium HD, .zarr, HEST, .h5ad) into an .h5ad",
    "eps": "EPS per gene and SPS of slices saved as .h5ad",
    "predict": "predict a slice's expression from reference slices",
    "atlas": "predictable-gene atlas of a cohort from a stored EPS table (CSV + PNG)",
    "benchmark": "compare image embeddings of slices: SPS and the HEST-Benchmark probe",
}
TRAINED_OVER_EPOCHS = ("mlp", "bleep", "heclip", "stnet")
"""The methods ``--epochs`` applies to."""
_DESCRIPTION = {
    "demo": "Embed the spots, compute EPS/SPS per section, predict each section from the others (auto: the "
    "cross-validated best of knn, ridge, their ensemble and BLEEP with context; and BLEEP), "
    "evaluate, and write results.h5ad per section, eps.csv, metrics.csv, PNGs and report.html.",
    "embed": "Read a slide (a Visium or Visium HD Space Ranger folder, a SpatialData .zarr store, a HEST-1k sample "
    "<root>/st/<id>.h5ad, or an .h5ad with patches or a Visium image), cut one patch per spot with "
    "st.pp.extract_patches and write the table with obsm['X_<model>'] from st.tl.embed.",
    "eps": "Compute EPS/SPS on each slice (expression prepared with st.pp.prepare_expression unless --prepared) and "
    "write eps.csv (genes × slices) and sps.csv to the output folder.",
    "predict": "Fit a method on the reference slice(s) and predict the query; writes the query with "
    "layers['predicted_<method>'] and, with --evaluate, the metrics.",
    "atlas": "Summarise stored EPS over slices with st.tl.predictable_genes (never recomputing EPS): the eps.csv of "
    "`stmorph eps` (genes × slices) or .h5ad slices after st.tl.eps (e.g. the demo's results.h5ad, which also hold "
    "q-values and evaluated predictions). Writes atlas.csv, eps_heatmap.png, marker_panel.png and, with --gene-sets, "
    "enrichment.csv and enrichment.png.",
    "benchmark": "Compare the embeddings --use-rep of slices saved as .h5ad with st.tl.benchmark_encoders: mean SPS "
    "and the HEST-Benchmark linear probe (one fold per patient group, --groups); writes encoders.csv and "
    "encoders.png to the output folder.",
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
        parser.add_argument(
            "--use-rep", default=None, help="obsm key of the image embeddings (default: X_<model>, embedded if absent)"
        )
    if out_folder is None:
        parser.add_argument("--out", required=True, help="output .h5ad")
    else:
        parser.add_argument("--out", default=out_folder, help="output folder (default: %(default)s)")


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """How raw inputs are read and embedded: ``--model``, ``--weights``, ``--bin-size``, ``--image``."""
    parser.add_argument("--model", default="default", help="encoder of st.tl.embed (default: %(default)s)")
    parser.add_argument("--weights", default=None, help="encoder weights: a local file, or 'hub'")
    parser.add_argument("--bin-size", type=int, default=None, help="Visium HD bin size in µm (default: 16)")
    parser.add_argument("--image", default=None, help="full-resolution H&E image of a Visium Space Ranger folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _embed_arguments(embed: argparse.ArgumentParser) -> None:
    embed.add_argument("input", help="Space Ranger / Visium HD folder, .zarr, HEST <root>/st/<id>.h5ad or .h5ad")
    _add_output_arguments(embed, None)
    _add_input_arguments(embed)


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    _add_output_arguments(demo, "stmorph_demo")
    demo.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5"], help="HER2ST sections (≥ 2)")
    demo.add_argument("--data-dir", default=None, help="folder holding her2st/ (default: $STMORPH_DATA_DIR)")
    demo.add_argument("--encoder", default="default", help="image encoder of st.tl.embed (default: %(default)s)")
    demo.add_argument(
        "--compare-encoders", nargs="*", default=["hed"], help="encoders of the report's encoder table (default: hed)"
    )
    demo.add_argument("--methods", nargs="+", default=["auto", "bleep"], help="prediction methods")
    demo.add_argument("--n-genes", type=int, default=2000, help="genes to predict, most expressed first; 0 = all")
    demo.add_argument(
        "--epochs", type=int, default=None, help="epochs of torch methods and of auto's BLEEP (default: paper's)"
    )
    demo.add_argument(
        "--torch-threads", type=int, default=1, help="torch CPU threads, 0 = torch's default (default: %(default)s)"
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _eps_arguments(eps: argparse.ArgumentParser) -> None:
    eps.add_argument("inputs", nargs="+", help="slices: .h5ad files with embeddings, or any input of `stmorph embed`")
    _add_output_arguments(eps, "stmorph_eps", use_rep=True)
    _add_input_arguments(eps)
    eps.add_argument("--n-neighbors", type=int, default=5, help="neighbours of the image graph (default: 5)")
    eps.add_argument("--prepared", action="store_true", help="X already holds prepared (scaled) expression")


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("query", help="the slice to predict (.h5ad, or any input of `stmorph embed`)")
    predict.add_argument("--reference", nargs="+", required=True, help="the training slice(s), as the query")
    predict.add_argument("--method", default="ridge", help="one of st.tl.list_methods() or auto (default: %(default)s)")
    predict.add_argument("--layer", default=None, help="expression layer to learn (default: X)")
    _add_output_arguments(predict, None, use_rep=True)
    predict.add_argument("--evaluate", action="store_true", help="also score the prediction against the measured")
    predict.add_argument(
        "--interval",
        type=float,
        default=None,
        help="also write conformal prediction intervals of this coverage, e.g. 0.9 (layers <layer>_lower/_upper)",
    )
    predict.add_argument("--params", default="{}", help="method options as JSON, e.g. '{\"epochs\": 20}'")
    _add_input_arguments(predict)


def _atlas_arguments(atlas: argparse.ArgumentParser) -> None:
    from .tl import PAPER_MARKERS

    atlas.add_argument("inputs", nargs="+", help="one eps.csv (genes × slices) or .h5ad slices after st.tl.eps")
    _add_output_arguments(atlas, "stmorph_atlas")
    atlas.add_argument("--qvals", default=None, help="q-values CSV of the same genes × slices as eps.csv")
    atlas.add_argument("--fraction", type=float, default=0.05, help="top/bottom share of genes (default: 0.05)")
    atlas.add_argument("--min-slices", type=int, default=1, help="slices a gene needs to be flagged (default: 1)")
    atlas.add_argument("--groupby", default=None, help="group of each slice: a column of --metadata or of obs")
    atlas.add_argument("--metadata", default=None, help="CSV with one row per slice (first column: slice name)")
    atlas.add_argument("--gene-sets", default=None, help="GMT file of gene sets to test the top/bottom genes against")
    atlas.add_argument("--markers", nargs="+", default=list(PAPER_MARKERS), help="genes of the marker panel")
    atlas.add_argument("--n-top", type=int, default=30, help="genes in the heatmap (default: 30)")


def _benchmark_arguments(benchmark: argparse.ArgumentParser) -> None:
    benchmark.add_argument("inputs", nargs="+", help="slices: .h5ad files holding every embedding of --use-rep")
    benchmark.add_argument("--use-rep", nargs="+", required=True, help="obsm keys of the embeddings to compare")
    benchmark.add_argument(
        "--groups", nargs="+", default=None, help="patient group of each input, in order (default: one per input)"
    )
    benchmark.add_argument("--out", default="stmorph_benchmark", help="output folder (default: %(default)s)")
    benchmark.add_argument("--n-top", type=int, default=50, help="probe genes (default: %(default)s, HEST's)")
    benchmark.add_argument("--n-perms", type=int, default=99, help="shuffles for the SPS p-value (default: 99)")
    benchmark.add_argument("--prepared", action="store_true", help="X already holds prepared (scaled) expression")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``stmorph predict: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stmorph", description="EPS/SPS and image-to-expression prediction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        ("demo", _demo_arguments), ("embed", _embed_arguments), ("eps", _eps_arguments),
        ("predict", _predict_arguments), ("atlas", _atlas_arguments), ("benchmark", _benchmark_arguments),
    )  # fmt: skip
    for name, add_arguments in commands:
        add_arguments(sub.add_parser(name, help=_HELP[name], description=_DESCRIPTION[name]))
    return parser


def _run_demo(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files; no display needed
    from ._demo import DemoSettings, run_demo

    settings = DemoSettings(
        encoder=args.encoder,
        methods=tuple(args.methods),
        n_genes=args.n_genes or None,
        method_kwargs=_epochs_kwargs(args.methods, args.epochs),
        torch_threads=args.torch_threads or None,
        compare_encoders=tuple(args.compare_encoders),
    )
    report = run_demo(
        args.out, sections=args.sections, data_dir=args.data_dir, settings=settings, progress=not args.no_progress
    )
    print(f"stmorph demo finished; open the report: {report.resolve()}")


def _epochs_kwargs(methods: Sequence[str], epochs: int | None) -> dict[str, dict]:
    """``--epochs`` as options of each torch method, and of ``auto``'s candidates that train a network."""
    if not epochs:
        return {}
    from .tl import AUTO, DEFAULT_CANDIDATES

    kwargs = {m: {"epochs": epochs} for m in methods if m in TRAINED_OVER_EPOCHS}
    if AUTO in methods:
        candidates = [(n, {**o, "epochs": epochs} if n in TRAINED_OVER_EPOCHS else o) for n, o in DEFAULT_CANDIDATES]
        kwargs[AUTO] = {"candidates": candidates}
    return kwargs


def _slice_names(paths: Sequence[str]) -> list[str]:
    """File stems as slice names; the parent folder's name where stems repeat (``C2/results.h5ad``)."""
    stems = [Path(p).stem for p in paths]
    return [Path(p).parent.name if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def _check_inputs(args: argparse.Namespace, paths: Sequence[str]) -> None:
    """Every input is a recognised kind and a local weights file exists, before anything heavy is read."""
    from ._inputs import input_kind

    for path in paths:
        input_kind(path)
    if args.weights not in (None, "hub"):
        check_path(args.weights, "--weights", "file")


def _embedded(path: str, args: argparse.Namespace, option: str, use_rep: str | None = None) -> ad.AnnData:
    """The table of one input with image embeddings in ``obsm[use_rep]`` (embedded now unless stored)."""

    from . import tl
    from ._inputs import input_kind, read_h5ad, read_slide
    from ._keys import Key

    if input_kind(path) == "h5ad":
        adata = read_h5ad(path, option)
        _check_use_rep(adata, path, option, args.use_rep)  # an explicit --use-rep must be there
        if use_rep is not None and use_rep in adata.obsm:
            return adata
        if Key.obsm.patches not in adata.obsm and Key.uns.spatial not in adata.uns:
            raise UsageError(
                f"{option}: {path!r} has no obsm[{use_rep!r}] and no patches or image to embed; pass "
                f"--use-rep with one of its embeddings {sorted(adata.obsm)}."
            )
    slide = read_slide(path, bin_size=args.bin_size, image=args.image)
    tl.embed(
        slide.table, model=args.model, weights=args.weights, image=slide.image, key_added=use_rep,
        progress=not args.no_progress,
    )  # fmt: skip
    return slide.table


def _use_rep(args: argparse.Namespace) -> str:
    from ._keys import Key

    return args.use_rep or Key.obsm.embedding(args.model)


def _run_embed(args: argparse.Namespace) -> None:
    from ._keys import Key

    _check_inputs(args, [args.input])
    check_path(args.out, "--out", "file_to_write")
    table = _embedded(args.input, args, "input")
    table.write_h5ad(args.out)
    print(f"wrote {args.out} with obsm[{Key.obsm.embedding(args.model)!r}] ({table.n_obs} spots)")


class UsageError(Exception):
    """A mistake in the command line itself (``--params``, an option): exit status 2."""


def _check_use_rep(adata: ad.AnnData, path: str, option: str, use_rep: str | None) -> None:
    """Raise a :class:`~stmorph.errors.StmorphKeyError` unless ``use_rep`` is ``None`` or in ``adata.obsm``."""
    from .errors import StmorphKeyError

    if use_rep is not None and use_rep not in adata.obsm:
        raise StmorphKeyError(
            f"{option}: {path!r} has no obsm[{use_rep!r}] (--use-rep); it holds {sorted(adata.obsm)}. "
            "Embed the spots first (st.tl.embed) or pass another --use-rep."
        )


def _run_eps(args: argparse.Namespace) -> None:
    from . import pp, tl

    check_int(args.n_neighbors, "--n-neighbors", low=1)
    check_path(args.out, "--out", "folder_to_write")
    _check_inputs(args, args.inputs)
    use_rep = _use_rep(args)
    slices = dict(zip(_slice_names(args.inputs), (_embedded(p, args, "input", use_rep) for p in args.inputs)))
    if not args.prepared:
        for adata in slices.values():
            pp.prepare_expression(adata)
    summary, eps = tl.sps(slices, use_rep=use_rep, n_neighbors=args.n_neighbors)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eps.to_csv(out / "eps.csv", index_label="gene")
    summary.to_csv(out / "sps.csv", index=False)
    print(summary.to_string(index=False))
    print(f"wrote {out / 'eps.csv'} and {out / 'sps.csv'}")


def _run_benchmark(args: argparse.Namespace) -> None:
    from . import pl, pp, tl
    from ._inputs import read_h5ad

    check_int(args.n_top, "--n-top", low=1)
    check_int(args.n_perms, "--n-perms", low=0)
    check_path(args.out, "--out", "folder_to_write")
    if args.groups is not None and len(args.groups) != len(args.inputs):
        raise UsageError(f"--groups has {len(args.groups)} entries for {len(args.inputs)} inputs; give one per input.")
    slices = dict(zip(_slice_names(args.inputs), (read_h5ad(p, "input") for p in args.inputs)))
    if not args.prepared:
        for adata in slices.values():
            pp.prepare_expression(adata)
    table = tl.benchmark_encoders(
        slices, use_rep=args.use_rep, groups=args.groups, n_top=args.n_top, n_perms=args.n_perms
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "encoders.csv")
    pl.benchmark_encoders(table, save=out / "encoders.png", show=False)
    print(table[["sps", "sps_pval", "probe_pearson_mean", "probe_pearson_sd"]].to_string())
    print(f"wrote {out / 'encoders.csv'} and {out / 'encoders.png'}")


_PREDICT_OWN = (
    *("query", "reference", "method", "use_rep", "layer", "model", "copy", "return_model", "key_added", "interval"),
)
"""Options of st.tl.predict that the ``predict`` command sets itself (not accepted in ``--params``)."""


def _method_params(text: str) -> dict:
    """The ``--params`` JSON object; not JSON, not an object, or repeating a command option is a usage error."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--params is not valid JSON ({err}); pass an object, e.g. '{{\"epochs\": 20}}'.") from None
    if not isinstance(params, dict):
        raise UsageError(f"--params must be a JSON object of method options; found {type(params).__name__}.")
    repeated = sorted(set(params) & set(_PREDICT_OWN))
    if repeated:
        raise UsageError(f"--params must not set {repeated}: the command sets them (use its own options).")
    return params


def _run_predict(args: argparse.Namespace) -> None:
    from . import get, tl
    from ._keys import Key
    from .tl import AUTO

    params = _method_params(args.params)
    check_choice(args.method, [*tl.list_methods(), AUTO], "--method")
    check_path(args.out, "--out", "file_to_write")
    _check_inputs(args, [args.query, *args.reference])
    use_rep = _use_rep(args)
    query = _embedded(args.query, args, "query", use_rep)
    references = [_embedded(p, args, "--reference", use_rep) for p in args.reference]
    tl.predict(
        query, references, method=args.method, use_rep=use_rep, layer=args.layer, interval=args.interval, **params
    )
    layer = f"predicted_{args.method}"
    query.write_h5ad(args.out)
    written = [layer] if args.interval is None else [layer, f"{layer}_lower", f"{layer}_upper"]
    print(f"wrote {args.out} with layers {written}")
    trusted = Key.var.trust(layer, "trusted")
    if trusted in query.var:
        print(f"{int(query.var[trusted].sum())} genes trusted: var[{trusted!r}] (expected r, EPS q: st.get.trust_df)")
    if args.evaluate:  # after the write: a failing evaluation never discards the prediction
        tl.evaluate(query, layer)
        print(get.evaluation_df(query, args.method).to_string())
        query.write_h5ad(args.out)
        print(f"wrote the metrics into {args.out}")


def _read_csv_table(path: str, option: str):
    """A CSV whose first column is the row names, as a DataFrame; missing or unreadable: a named error."""
    import pandas as pd

    from .errors import DamagedFileError

    check_path(path, option, "file")
    try:
        return pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{option}: {path!r} is not a readable CSV table ({err}).") from None


def _atlas_input(paths: Sequence[str]):
    """The cohort of ``stmorph atlas``: one EPS CSV table, or the slices of ``.h5ad`` files."""
    from ._inputs import read_h5ad

    if len(paths) == 1 and Path(paths[0]).suffix.lower() == ".csv":
        return _read_csv_table(paths[0], "input")
    if any(Path(p).suffix.lower() != ".h5ad" for p in paths):
        raise UsageError("atlas takes one eps.csv (genes × slices) or .h5ad slices; found " + ", ".join(paths) + ".")
    return dict(zip(_slice_names(paths), (read_h5ad(p, "input") for p in paths)))


def _run_atlas(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only
    from . import pl, tl

    check_int(args.n_top, "--n-top", low=1)
    check_path(args.out, "--out", "folder_to_write")
    cohort = _atlas_input(args.inputs)
    qvals = _read_csv_table(args.qvals, "--qvals") if args.qvals else None
    metadata = _read_csv_table(args.metadata, "--metadata") if args.metadata else None
    group = {"groupby": args.groupby, "metadata": metadata}
    atlas = tl.predictable_genes(cohort, qvals, fraction=args.fraction, min_slices=args.min_slices, **group)
    enrichment = tl.enrich_predictable(atlas, args.gene_sets) if args.gene_sets else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atlas.to_csv(out / "atlas.csv")
    written = ["atlas.csv"]
    figures = {
        "eps_heatmap.png": pl.eps_heatmap(cohort, n_top=args.n_top, show=False, **group),
        "marker_panel.png": _marker_panel(cohort, args.markers),
    }
    if enrichment is not None:
        enrichment.to_csv(out / "enrichment.csv", index=False)
        figures["enrichment.png"] = pl.enrichment(enrichment, show=False)
        written.append("enrichment.csv")
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
            written.append(name)
    print(atlas.loc[atlas["top"], ["mean_eps", "n_slices", "frac_significant", "consistency"]].head(10).to_string())
    print(f"wrote {', '.join(written)} to {out}")


def _marker_panel(cohort, markers: Sequence[str]):
    """The marker panel, or ``None`` (with a note) when no marker was scored."""
    from . import pl
    from .errors import StmorphKeyError

    try:
        return pl.marker_panel(cohort, markers, show=False)
    except StmorphKeyError as err:
        print(f"no marker panel: {err}", file=sys.stderr)
        return None


_COMMANDS = {
    "demo": _run_demo,
    "embed": _run_embed,
    "eps": _run_eps,
    "predict": _run_predict,
    "atlas": _run_atlas,
    "benchmark": _run_benchmark,
}


def _run(command: str, args: argparse.Namespace) -> int:
    """Run one subcommand; a user mistake prints one line ``stmorph <command>: error: ...`` and no traceback.

    Returns the exit status: 0, 2 for a usage mistake (an option or parameter), 1 for a data problem
    (a missing key, a damaged file, too few spots, ...).
    """
    from . import errors

    data_errors = tuple(getattr(errors, name) for name in errors.__all__)
    try:
        _COMMANDS[command](args)
    except (UsageError, errors.InvalidParameterError) as err:
        print(f"stmorph {command}: error: {err}", file=sys.stderr)
        return 2
    except data_errors as err:
        print(f"stmorph {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stmorph`` console script (exit status 0, 1 for bad data, 2 for bad usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return _run(args.command, args)


if __name__ == "__main__":
    raise SystemExit(main())

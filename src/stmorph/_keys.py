"""Every key stmorph writes into an AnnData, named in one place (as squidpy's ``Key``).

The layout (written down in ``docs/design.md``, section "Keys and layout"):

- ``uns["stmorph"][tool][key_added]``: the parameters/record of one run of a tool (``patches``,
  ``prepare_expression``, ``embed``, ``eps``, ``predict``, ``evaluate``); the example datasets'
  metadata is ``uns["stmorph"]["dataset"]``.
- Results users read directly keep scanpy's top-level places: the graph's record
  ``uns[graph_key]`` (as :func:`scanpy.pp.neighbors`), ``uns["sps"]``, ``obsp``, ``obsm``,
  ``var``, ``layers`` under the names built here.

Examples
--------
>>> from stmorph._keys import Key
>>> Key.uns.tool("eps", "eps")
('stmorph', 'eps', 'eps')
>>> Key.obsp.connectivities("image")
'image_connectivities'
"""

from __future__ import annotations

UNS_KEY = "stmorph"
"""The one ``uns`` entry that holds every stmorph record."""

_PREDICTED = "predicted_"


class Key:
    """Names of the keys stmorph writes, grouped by AnnData slot."""

    class uns:
        """``uns`` paths (tuples are paths into nested dicts, as :func:`~stmorph._anndata.commit_outputs` takes)."""

        root = UNS_KEY
        spatial = "spatial"
        """Visium libraries ``uns["spatial"][library_id]`` (images, scale factors), as :func:`scanpy.read_visium`."""
        dataset = (UNS_KEY, "dataset")
        """Metadata of the example datasets: ``{"name", "section", "mpp"}``."""

        @staticmethod
        def tool(tool: str, key: str | None = None) -> tuple[str, ...]:
            """``uns["stmorph"][tool][key]``, or the tool's whole node when ``key`` is ``None``."""
            return (UNS_KEY, tool) if key is None else (UNS_KEY, tool, key)

        @staticmethod
        def sps(key_added: str = "eps") -> str:
            """``uns`` key of the SPS of ``st.tl.eps(key_added=...)``: ``"sps"``, else ``f"sps_{key_added}"``."""
            return "sps" if key_added == "eps" else f"sps_{key_added}"

    class obsm:
        """``obsm`` keys."""

        patches = "patches"
        spatial = "spatial"
        """Spot centres in full-resolution image pixels (x = column, y = row): every ``spatial_key`` default."""

        @staticmethod
        def embedding(model: str) -> str:
            """Default key of the embeddings of encoder ``model``: ``X_<model>``, a hub name by its repository.

            ``"hf-hub:owner/name"`` gives ``X_owner_name`` (h5ad and zarr would nest a key with ``/``).
            """
            return "X_" + model.removeprefix("hf-hub:").replace("/", "_")

        @staticmethod
        def patch_centres(key: str = "patches") -> str:
            """Window centres of a lazy patch extraction stored under ``key``."""
            return f"{key}_centres_px"

        @staticmethod
        def patch_rows(key: str = "patches") -> str:
            """Rows in a patch file (HEST-1k's ``patches/<id>.h5``) of the patches read lazily under ``key``."""
            return f"{key}_rows"

    class obsp:
        """``obsp`` keys of a graph stored under the prefix ``key`` (``graph_key``/``key_added``)."""

        @staticmethod
        def connectivities(key: str) -> str:
            """Binary directed kNN graph."""
            return f"{key}_connectivities"

        @staticmethod
        def distances(key: str) -> str:
            """Distances of the same edges."""
            return f"{key}_distances"

    class obs:
        """``obs`` columns."""

        split = "stmorph_split"
        patch_complete = "patch_complete"
        tissue_fraction = "tissue_fraction"

    class var:
        """``var`` columns."""

        @staticmethod
        def eps(key_added: str = "eps") -> tuple[str, str, str]:
            """EPS, p-value and q-value columns of ``st.tl.eps(key_added=...)``."""
            return key_added, f"{key_added}_pval", f"{key_added}_qval"

        @staticmethod
        def metric(metric: str, name: str) -> str:
            """Per-gene score ``metric`` (``pearson``, ``spearman``, ``rmse``, ``ssim``) of evaluation ``name``."""
            return f"{metric}_{name}"

        @staticmethod
        def n_detected(key_added: str = "eps") -> str:
            """Spots where each gene is detected, beside the EPS of ``st.tl.eps(key_added=...)``."""
            return f"{key_added}_n_detected"

        @staticmethod
        def trust(key: str, column: str) -> str:
            """Trust column ``column`` (``expected_r``, ``eps_qval``, ``trusted``, …) of the prediction ``key``."""
            return f"{key}_{column}"

        @staticmethod
        def spatial_eps(key_added: str = "eps") -> str:
            """``-log`` Geary's C on the spatial kNN graph, beside the EPS of ``st.tl.eps(key_added=...)``."""
            return f"{key_added}_spatial"

    class layers:
        """``layers`` keys."""

        predicted_prefix = _PREDICTED
        counts = "counts"
        """Raw counts kept by :func:`~stmorph.pp.prepare_expression`."""
        log1p = "log1p"
        """Normalised log1p expression kept by :func:`~stmorph.pp.prepare_expression`."""

        @staticmethod
        def predicted(method: str) -> str:
            """Default layer of the predictions of ``method``."""
            return f"{_PREDICTED}{method}"

        @staticmethod
        def interval(key: str) -> tuple[str, str]:
            """Lower and upper bounds of the prediction intervals around ``layers[key]``."""
            return f"{key}_lower", f"{key}_upper"

"""The ``secvit`` command line: thin Typer wrappers around the library."""

from __future__ import annotations

import warnings

import typer

from secvit.cli import bench, data, doctor, downstream, models, plan, repro, results, train

# torch 2.14 warns on every import of libraries that still call torch.jit.script.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
# mmengine resolves `mmdet::`/`mmseg::` config bases through pkg_resources (setuptools pinned below 81 for it).
warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated")

app = typer.Typer(
    name="secvit",
    help="Reproduce SecViT (Semantic Equitable Clustering Vision Transformer): models, training, pipeline, tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models.register(app)
train.register(app)
downstream.register(app)
data.register(app)
results.register(app)
repro.register(app)
bench.register(app)
plan.register(app)
doctor.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

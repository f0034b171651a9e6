"""Datasets: loaders, layout checks, manifests and the generated smoke datasets."""

"""The registered datasets, one module each (imported by :func:`benchmark.data.base.load_datasets`).

Adding a dataset is one module here that registers a :class:`benchmark.data.base.DatasetSpec`.
"""

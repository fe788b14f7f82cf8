"""The predictive engine: training and scoring data from the platform's own store, and beyond.

``features.build_dataset`` turns a tenant's stored rollups, maintenance records, alerts and
anomaly scores into a columnar ``FeatureFrame`` (one row per asset and prediction time), with
failure labels from ``labels``. ``bench.run_features_bench`` measures it.
"""

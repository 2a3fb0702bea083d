"""The Ray engine: a predictor class for ``Dataset.map_batches`` and the reader of read units
(``predictor``), ``scorer run --engine ray`` (``engine``), the pool's size and placement
(``sizing``), its output directory (``output``) and the attempts it counts (``attempts``).

    import ray, scorer.engines.ray as sr
    model = ray.put(sr.ModelBundle.read("model/"))
    ds = sr.read_reviews("s3://bucket/reviews/", ["Title", "Review Text", "id"])
    scored = ds.map_batches(sr.RatingPredictor, fn_constructor_kwargs={"model": model}, ...)
"""

from scorer.engines.ray.predictor import ModelBundle, RatingPredictor, read_reviews

__all__ = ["ModelBundle", "RatingPredictor", "read_reviews"]

"""The local engine: ``scorer run`` (``run``), ``scorer eval`` (``evaluate``), and the
threaded stage pipeline both use (``pipeline``)."""

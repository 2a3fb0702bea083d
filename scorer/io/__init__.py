"""Reading and writing: the one reader (``source``), durable writes and locks (``files``),
labelled data for training (``labelled``)."""

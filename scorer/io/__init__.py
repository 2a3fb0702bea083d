"""Reading and writing: the one reader (``source``), parts and the assembled output
(``parts``), durable writes and locks (``files``), labelled data for training (``labelled``)."""

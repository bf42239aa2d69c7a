"""The model: graph layers on dense padded graphs (`conv`, `norm`, `pooling`, `dropout`), the
recurrent `temporal` classifier, and the `STGNN` that joins them (`model`)."""

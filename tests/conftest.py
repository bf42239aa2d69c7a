"""Suite-wide settings: reproducible property tests (the same examples on every run and in CI)."""

import hypothesis

hypothesis.settings.register_profile("stgnn", derandomize=True, deadline=None,
                                     print_blob=True)
hypothesis.settings.load_profile("stgnn")

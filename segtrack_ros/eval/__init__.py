"""Generated scenes with exact ground truth, and the scoring of the package against them."""

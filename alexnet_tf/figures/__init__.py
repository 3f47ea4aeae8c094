"""The paper's figures: fc7 features, rendering, Figures 3 and 4, TensorBoard logs."""

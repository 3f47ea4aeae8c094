"""The paper's Figure 1: ReLU vs tanh, epochs to 25% training error on CIFAR-10."""

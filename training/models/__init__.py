"""The Keras models: architecture names (`archs`), ConvNeXt and EfficientNet-Lite0 backbones,
the shared sigmoid head, custom layers, and `factory.build_model` with its weight loading."""

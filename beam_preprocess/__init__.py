"""Apache Beam preprocessing: corpus -> vocabulary + sharded TFRecord windows."""

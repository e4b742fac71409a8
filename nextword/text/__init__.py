"""The text contract: how bytes become text, text tokens, and tokens ids (Python and TensorFlow twins)."""

"""The GPU stage: embedders behind one protocol, and the streaming runner."""

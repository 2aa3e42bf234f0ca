"""The generated shapes detection data set and the tiny one-stage detector trained on it."""

"""Helpers the tests share: real server processes, backends, stock JS clients."""

"""Mirroring the registry into running objects: status refresh, endings, adoption.

``policy`` decides what to do about one object given a registry snapshot (pure),
``adoption`` decides which sessions no object claims get one (pure), ``loop`` reads the
registry once per cycle and applies both.
"""

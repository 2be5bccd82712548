"""Data: load and validate items, pair arms, select the data each stage trains and tests on."""

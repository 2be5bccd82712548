"""The GPU tower: a machine reached over SSH, where an arm trains (in the training container, or
in a Python environment there) while the climb runs here. `host` reaches it, `sync` ships files
both ways, `training` runs one arm there from start to checked result."""

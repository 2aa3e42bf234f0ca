"""The accelerator contract: config, number formats, ISA, register map and DDR layout (one definition each)."""

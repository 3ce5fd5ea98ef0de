"""Planning: tensor lifetimes over every execution path, and the device memory plan. Pure Python."""

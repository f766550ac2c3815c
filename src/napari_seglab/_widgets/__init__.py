"""Qt/magicgui dock widgets. Thin shells over the core: gather layers, run jobs, write results."""

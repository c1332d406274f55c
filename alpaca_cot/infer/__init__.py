"""The inference stage: a base model with its adapter reloaded and answering (generation), in generate.py's
modes: one instruction, a file, an interactive prompt, a web page (answer); its flags as one typed config
(config). Imports no training code."""

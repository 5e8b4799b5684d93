"""The hardware description: chips as data (:mod:`hardware.chips`, presets with their
sources) and number formats (:mod:`hardware.dtypes`).  The bottom layer: it imports no
other package of the project, and every other layer may import it."""

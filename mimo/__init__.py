"""MIMO (Havasi et al., ICLR 2021): M independent subnetworks in one network.
Importing this package registers the method."""

from benchmark.core.registry import import_submodules

import_submodules(__name__, __path__)

"""Signal generators: pure `compute` over market data, and the registry that names them.

Register a new generator here, explicitly: the registry is the one list of what exists.
"""

from generators.base import Bars, BaseSignalGenerator, GeneratorConfig, Tick
from generators.registry import GeneratorRegistry, RegistryError


def default_registry() -> GeneratorRegistry:
    """Every generator this service ships, registered once."""
    registry = GeneratorRegistry()
    # Imported here so importing `generators` stays cheap and cycle-free.
    from generators.confluence import ConfluenceGenerator
    from generators.death_cross import DeathCrossSignalGenerator
    from generators.golden_cross import GoldenCrossSignalGenerator
    from generators.mock import MockSignalGenerator
    from generators.news import NewsSignalGenerator
    from generators.price_level import PriceLevelGenerator
    from generators.volatility import VolatilityBreakoutGenerator

    registry.register(MockSignalGenerator)
    registry.register(GoldenCrossSignalGenerator)
    registry.register(DeathCrossSignalGenerator)
    registry.register(VolatilityBreakoutGenerator)
    registry.register(PriceLevelGenerator)
    registry.register(NewsSignalGenerator)
    registry.register(ConfluenceGenerator)
    return registry


__all__ = [
    "Bars",
    "BaseSignalGenerator",
    "GeneratorConfig",
    "GeneratorRegistry",
    "RegistryError",
    "Tick",
    "default_registry",
]

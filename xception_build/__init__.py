"""xception-build: declarative Xception-family networks, compiled from YAML specs.

Pipeline (one module per stage): ``source`` (YAML -> data with positions) -> ``spec``
(validated, immutable) -> ``plan`` (shapes, parameters, MACs) -> ``builder``/``model``
(``nn.Module``) -> ``weights`` (checkpoints). Exporters live in the separate ``exporters``
package, which depends on this one and never the reverse.
"""

from .builder import build_model
from .errors import XBuildError
from .model import XceptionNet
from .plan import Plan, plan_spec
from .spec import Spec, load_spec

__all__ = ["Plan", "Spec", "XBuildError", "XceptionNet", "build_model", "load_spec", "plan_spec"]
__version__ = "0.1.0"

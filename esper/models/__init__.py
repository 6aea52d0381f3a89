"""Host models. Each names its seed sites in conf/model/<name>.yaml."""

from esper.models.hosts import CNN, MLP
from esper.models.resnet import ResNetSmall
from esper.models.transformer import TransformerTiny

__all__ = ["CNN", "MLP", "ResNetSmall", "TransformerTiny"]

"""Task models: heads, losses, decoding and metrics over the layers."""

from rnnkit.models.language_model import CELLS, LanguageModel, LanguageModelConfig, LMOutput, LMState
from rnnkit.models.lm_ensemble import LanguageModelEnsemble, LanguageModelEnsembleConfig, LMEnsembleState
from rnnkit.models.sampling import SamplingConfig
from rnnkit.models.text_generation import Completion

__all__ = ["LanguageModel", "LanguageModelConfig", "LMOutput", "LMState", "CELLS", "SamplingConfig",
           "Completion", "LanguageModelEnsemble", "LanguageModelEnsembleConfig", "LMEnsembleState"]

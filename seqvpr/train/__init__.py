"""Training of the sequence models on cached CCT384 tokens, as the Adapt-STformer authors train
(ai4ce/Adapt-STFormer `svpr_main.py`, `train.py`, `datasets.py`, `get_models.py`, themselves seqNet's
recipe): the NetVLAD layers start from k-means centres of training tokens; every epoch the
descriptors of all training sequences are cached; per query the nearest non-trivial positive, and
negatives resampled from the candidates plus the query's `negCache` of past hard negatives, of which
only margin-violating ones are kept; batches of such tuples; summed triplet loss (margin 0.1;
seqNet's sqrt(0.1)) divided by the number of negatives; the weights with the best validation
Recall@5 are kept, the starting weights among them where the authors' code evaluates them
(svpr_main.py evaluates before each epoch's training; seqNet's main.py, and so SeqNet and
OptiCorNet, only after: `Recipe.start_is_candidate`; where the start is kept, the best trained
epoch's weights are returned too, `TrainResult.trained_state_dict`); early stop when `not_improved > patience`. Each
model's optimiser, schedule, batch size, loss and budget come from its registry entry
(`seqvpr.models.REGISTRY`, `TrainConfig.for_model`): Adam lr 1e-5 and batches of 4 for the
Adapt-STformer code base's models, seqNet's SGD with StepLR for SeqNet, OptiCorNet's SGD with its
quadruplet loss; on a CPU a stated smaller budget.

The cached tokens are those after the frozen CCT blocks (`seqvpr.embed.cct`): the trainable CCT
blocks after the cut (`tail`, none with a frozen backbone) run per frame before the head. Heads
whose published frame backbone is not CCT384 (`seqvpr.models.MODEL_BACKBONE`: JIST's ResNet-18 +
GeM, SeqNet's and OptiCorNet's VGG16 + NetVLAD) read either that backbone's frame descriptors
(`published_features`: `seqvpr.embed.frame_descriptors` puts them in the split in place of the
tokens, and the head is built at its published width) or what the token cache has: each frame's
final CCT tokens pooled into a frame descriptor that keeps the token map's layout
(`GridWhitening`: means over a 2 x 2 grid of the map, PCA-whitened to POOLED_DIM on the training
split, as the published VGG16 + NetVLAD descriptor is WPCA-whitened), with the head built for that
dimension. Plain mean-pooling of the seeded random CCT's tokens leaves the synthetic world's
Oxford-easy test split at chance (R@5 0.348 against a random 0.404), the grid means whitened to
16-D retrieve it at 0.865 without a head (README, "What the synthetic world lets a model learn").

Modules: `split_data` (a split as training reads it), `pooling` (the pooled frame descriptor),
`model` (the model, sequence descriptors, Recall@K), `config` (a run's settings and result),
`start` (whitening and k-means starting weights), `mining` (tuples and loss), `loop` (`train`),
`checkpoints`, `folds` (route folds of a training split, to choose settings without the test split).
"""
from seqvpr.train.checkpoints import load_checkpoint, save_checkpoint
from seqvpr.train.config import TrainConfig, TrainResult
from seqvpr.train.loop import make_optimiser, parameter_groups, train
from seqvpr.train.mining import batch_loss, mine_tuple
from seqvpr.train.model import (SequenceModel, build_sequence_model, describe, evaluate_recall, frame_features,
                                head_kwargs)
from seqvpr.train.pooling import POOLED_DIM, POOLED_GRID, GridWhitening, reads_pooled_tokens
from seqvpr.train.split_data import SplitData, load_split_data
from seqvpr.train.start import fit_pooling, initialise_vlad

__all__ = ["POOLED_DIM", "POOLED_GRID", "GridWhitening", "SequenceModel", "SplitData", "TrainConfig", "TrainResult",
           "batch_loss", "build_sequence_model", "describe", "evaluate_recall", "fit_pooling", "frame_features",
           "head_kwargs", "initialise_vlad", "load_checkpoint", "load_split_data", "make_optimiser", "mine_tuple",
           "parameter_groups", "reads_pooled_tokens", "save_checkpoint", "train"]

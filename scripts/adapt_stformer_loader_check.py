"""Run the Adapt-STFormer authors' own dataset code, unchanged, on an `seqvpr export --format
adapt-stformer --raw-inputs` folder, the way svpr_main.py / train.py / test.py call it.

Run it with the authors' checkout (ai4ce/Adapt-STFormer, folder Adapt-STFormer/) as the current
folder, our struct files copied into its structFiles/ and its hard-coded raw_384 folders
(/vast/yl9727/nordland/, /scratch/yl9727/{oxford2,oxford-hard,nuscenes}/) reachable (README
"Use with ... Adapt-STFormer" shows how without editing get_datasets.py):

    python /path/to/seqvpr/scripts/adapt_stformer_loader_check.py oxford-easy

It imports their get_datasets.py and datasets.py, and their svpr/utils/utils.py as a file (for
build_svpr_parser and getRecallAtN: the svpr package's __init__ imports the model stack). It does
not import svpr_main.py (get_models, tensorboardX, ptflops, `git rev-parse`): the model is replaced by
a stand-in descriptor (per-frame channel means of each window), so that train.py's HDF5 cache,
QueryDatasetFromStruct's batches and test.py's faiss search and recall run on real items. Needs
torch, torchvision, h5py, faiss, scikit-learn, scipy (their imports); prints one ``CHECK`` line per
finding. For Nordland its np.vstack of the season arrays needs ~182 GiB: where that cannot be had
(run it under ``ulimit -d``), the checks stop at the arrays' shapes, its index arithmetic and the
struct files.
"""
import importlib.util
import os
import resource
import sys
import tempfile
import time
from os.path import join

import numpy as np

sys.path.insert(0, os.getcwd())
import faiss  # noqa: E402
import h5py  # noqa: E402
import torch  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

import datasets as their_datasets  # noqa: E402  (the authors' datasets.py)
from get_datasets import get_dataset, get_splits  # noqa: E402  (the authors' get_datasets.py)

_spec = importlib.util.spec_from_file_location("their_svpr_utils", join(os.getcwd(), "svpr", "utils", "utils.py"))
their_utils = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(their_utils)

# the README / export.json command, plus --nocuda (svpr_main.py refuses to run without a GPU otherwise)
# and the training settings of the Adapt-STformer sbatch files (batches of 4, 5 negatives)
COMMAND = ["--arch", "adapt_stformer", "--pooling", "seqvlad", "--trunc_te", "8", "--freeze_te", "1", "--seqL", "5",
           "--cacheBatchSize", "1", "--descType", "raw_384", "--img_shape", "384", "384", "--outDims", "24576",
           "--backbone", "cct384", "--k_points", "8", "--num_levels", "2", "--nocuda", "--batchSize", "4", "--nNeg", "5",
           "--threads", "0"]
N_VALUES = [1, 5, 10, 20, 100]  # test.py


def report(dataset, name, value):
    print(f"CHECK {dataset} {name}: {value}", flush=True)


def descriptor(windows) -> np.ndarray:
    """Stand-in for the model: (B, seqL, 3, H, W) -> (B, seqL * 3) channel means."""
    windows = torch.as_tensor(np.asarray(windows)).float()
    return windows.mean(dim=(-1, -2)).reshape(windows.shape[0], -1).numpy()


def check_eval_set(opt, eval_set, label):
    """test.py: a feature per item (database rows, then query rows), split at dbStruct.numDb, faiss
    L2 search, gt = get_positives()[:numQ], getRecallAtN; and every item's window inside its seqBounds."""
    say = lambda name, value: report(opt.dataset, f"{label} {name}", value)
    n, num_db, num_q = len(eval_set), eval_set.dbStruct.numDb, eval_set.dbStruct.numQ
    say("len(eval_set) / numDb / numQ / images", (n, num_db, num_q, eval_set.images.shape))
    features = np.zeros((n, opt.seqL * 3), np.float32)
    shapes = set()
    for windows, indices in DataLoader(eval_set, num_workers=opt.threads, batch_size=opt.cacheBatchSize, shuffle=False):
        shapes.add(tuple(windows.shape))
        features[indices.numpy()] = descriptor(windows)
    say("item shapes", sorted(shapes))
    outside = 0
    for i in range(n):
        index = eval_set.validInds[i]
        low, high = eval_set.seqBounds[index]
        window = their_datasets.getSeqInds(index, eval_set.seqL, high, minNum=low)
        outside += int(window.min() < low or window.max() >= high or window.max() >= len(eval_set.images))
    say("windows outside their seqBounds", outside)
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features[:num_db])
    _, predictions = index.search(features[num_db:], max(N_VALUES))
    gt = eval_set.get_positives()
    gt = gt[: cdist(eval_set.dbStruct.utmDb, eval_set.dbStruct.utmQ).shape[1]]
    say("query rows / gt entries", (n - num_db, len(gt)))
    found = np.concatenate([np.asarray(g, dtype=np.int64) for g in gt]) if len(gt) else np.zeros(0, np.int64)
    say("gt index range / numDb", ((int(found.min()), int(found.max())) if len(found) else None, num_db))
    say("queries without gt", sum(len(g) == 0 for g in gt))
    say(f"recall@{N_VALUES} (stand-in descriptor)", np.round(their_utils.getRecallAtN(N_VALUES, predictions, gt, opt), 3).tolist())


def check_training(opt, whole_train_set, whole_loader, train_set, dataset):
    """train.py: the HDF5 cache of every whole_train_set item, then every batch of the training
    query set through Dataset.collate_fn (QueryDatasetFromStruct.__getitem__ picks positives and
    negatives from the cache)."""
    cache_dir = tempfile.mkdtemp(prefix="adapt_stformer_cache_")
    train_set.cache = join(cache_dir, f"{train_set.whichSet}_feat_cache.hdf5")
    with h5py.File(train_set.cache, mode="w") as h5:
        h5feat = h5.create_dataset("features", [len(whole_train_set), opt.seqL * 3], dtype=np.float32)
        for windows, indices in whole_loader:
            h5feat[indices.detach().numpy(), :] = descriptor(windows)
    report(opt.dataset, "train whole set len / numDb / numQ",
           (len(whole_train_set), train_set.dbStruct.numDb, train_set.dbStruct.numQ))
    report(opt.dataset, "train query set len / queries with non-trivial positives", (len(train_set), len(train_set.queries)))
    loader = DataLoader(Subset(train_set, np.arange(len(train_set))), num_workers=opt.threads, batch_size=opt.batchSize,
                        shuffle=True, collate_fn=dataset.collate_fn)
    batches, empty, shapes = 0, 0, set()
    for query, positives, negatives, _, _ in loader:
        if query is None:
            empty += 1
            continue
        batches += 1
        shapes.add((tuple(query.shape), tuple(positives.shape), tuple(negatives.shape)))
    report(opt.dataset, "train batches read / empty batches", (batches, empty))
    report(opt.dataset, "train (query, positive, negatives) shapes", sorted(shapes))
    os.remove(train_set.cache)
    os.rmdir(cache_dir)


def check_nordland_without_vstack(opt, error):
    """get_dataset's Nordland branch up to its np.vstack: the same np.load calls and index
    arithmetic, then the two struct files it names."""
    report(opt.dataset, "get_dataset", f"{type(error).__name__} at np.vstack: {error}")
    order = {"nordland-sw": ("summer", "winter", "spring", "fall"), "nordland-sf": ("spring", "fall", "summer", "winter")}
    ft = [np.load(join("/vast/yl9727/nordland/", f"nordland_raw_{t}_384.npy"), mmap_mode="r") for t in order[opt.dataset]]
    report(opt.dataset, "np.load shapes/dtypes (train_ref, train_qry, val_ref, val_qry)", [(a.shape, str(a.dtype)) for a in ft])
    skip_rate = int(opt.skip.lower())
    train_inds = np.arange(0, 15000, skip_rate)
    test_inds = ft[0].shape[0] + np.arange(15100, 18100, skip_rate)
    stacked = (ft[0].shape[0] + ft[2].shape[0], ft[1].shape[0] + ft[3].shape[0])
    report(opt.dataset, "trainInds / testInds max vs stacked rows (db, q)", (int(train_inds.max()), int(test_inds.max()), stacked))
    report(opt.dataset, "np.vstack would hold GiB (db + q)", round(sum(stacked) * ft[0][0].nbytes / 2**30, 1))
    for name, inds in (("nordland_train_d-40_d2-10.db", train_inds), ("nordland_test_d-1_d2-1.db", test_inds)):
        struct = their_datasets.parse_db_struct(join("./structFiles/", name))
        report(opt.dataset, f"{name} numDb / numQ vs rows its loader takes", (struct.numDb, struct.numQ, len(inds)))


def main(dataset_name: str) -> None:
    start = time.time()
    parser = their_utils.build_svpr_parser()
    opt = parser.parse_args(COMMAND + ["--dataset", dataset_name, "--mode", "train"])
    opt.seq_length, opt.train_batch_size, opt.infer_batch_size = opt.seqL, opt.batchSize, opt.cacheBatchSize  # svpr_main.py
    try:
        dataset, encoder_dim = get_dataset(opt)
    except MemoryError as error:
        if not dataset_name.startswith("nordland"):
            raise
        check_nordland_without_vstack(opt, error)
        return
    report(dataset_name, "dbDescs / qDescs shapes", (dataset.dbDescs.shape, dataset.qDescs.shape))
    for name in ("trainInds", "testInds"):
        inds = getattr(dataset, name)
        report(dataset_name, f"{name} (first, last, count) db / q", [(int(i.min()), int(i.max()), len(i)) for i in inds])
    whole_train_set, whole_loader, train_set, whole_val_set = get_splits(opt, dataset)
    check_training(opt, whole_train_set, whole_loader, train_set, dataset)
    check_eval_set(opt, whole_val_set, "val (--mode train)")
    for split in ("test", "train"):
        opt_test = parser.parse_args(COMMAND + ["--dataset", dataset_name, "--mode", "test", "--split", split])
        check_eval_set(opt_test, get_splits(opt_test, dataset)[3], f"--mode test --split {split}")
    report(dataset_name, "peak RSS GiB", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
    report(dataset_name, "seconds", round(time.time() - start, 1))


if __name__ == "__main__":
    main(sys.argv[1])

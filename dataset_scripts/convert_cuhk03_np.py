"""Convert CUHK03-NP (labeled or detected boxes) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_cuhk03_np.py /data/cuhk03-np --labeled --out cuhk03_np_hf
    python dataset_scripts/convert_cuhk03_np.py /data/cuhk03-np --labeled --out cuhk03_np_pq --format parquet
    python dataset_scripts/convert_cuhk03_np.py /data/cuhk03-np --labeled --push-to-hub ORG/cuhk03-np

There is no default box set: pass --labeled (hand-labelled) or --no-labeled (detected).
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("cuhk03_np", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("cuhk03_np", description=__doc__))

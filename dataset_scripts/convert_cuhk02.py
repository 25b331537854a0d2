"""Convert CUHK02 (a train-only split of all five camera pairs) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_cuhk02.py /data/cuhk02/Dataset --out cuhk02_hf
    python dataset_scripts/convert_cuhk02.py /data/cuhk02/Dataset --out cuhk02_pq --format parquet
    python dataset_scripts/convert_cuhk02.py /data/cuhk02/Dataset --push-to-hub ORG/cuhk02

data_dir holds P1 .. P5, each with cam1/ and cam2/ (<person>_<n>.png).
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("cuhk02", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("cuhk02", description=__doc__))

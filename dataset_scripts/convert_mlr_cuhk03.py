"""Convert MLR-CUHK03 (low-resolution queries) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_mlr_cuhk03.py /data/MLR-CUHK03 --out mlr_cuhk03_hf
    python dataset_scripts/convert_mlr_cuhk03.py /data/MLR-CUHK03 --out mlr_cuhk03_pq --format parquet
    python dataset_scripts/convert_mlr_cuhk03.py /data/MLR-CUHK03 --push-to-hub ORG/mlr-cuhk03

Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("mlr_cuhk03", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("mlr_cuhk03", description=__doc__))

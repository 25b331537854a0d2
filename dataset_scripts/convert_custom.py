"""Convert your own data (identity folders or a CSV of path,pid[,camid]) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_custom.py /data/my_people --num-test-ids 50 --out custom_hf
    python dataset_scripts/convert_custom.py /data/my_people --num-test-ids 50 --out custom_pq --format parquet
    python dataset_scripts/convert_custom.py /data/my_people --num-test-ids 50 --push-to-hub ORG/custom

See docs/DATASETS.md for the folder and CSV forms and how data without cameras is evaluated.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("custom", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("custom", description=__doc__))

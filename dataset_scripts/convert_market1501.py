"""Convert Market-1501 to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_market1501.py /data/Market-1501-v15.09.15 --out market1501_hf
    python dataset_scripts/convert_market1501.py /data/Market-1501-v15.09.15 --out market1501_pq --format parquet
    python dataset_scripts/convert_market1501.py /data/Market-1501-v15.09.15 --push-to-hub ORG/market1501

Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("market1501", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("market1501", description=__doc__))

"""Convert LTCC (clothes-changing Re-ID) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_ltcc.py /data/LTCC_ReID --protocol clothes_changing --out ltcc_hf
    python dataset_scripts/convert_ltcc.py /data/LTCC_ReID --protocol clothes_changing --out ltcc_pq --format parquet
    python dataset_scripts/convert_ltcc.py /data/LTCC_ReID --protocol clothes_changing --push-to-hub ORG/ltcc

Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("ltcc", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("ltcc", description=__doc__))

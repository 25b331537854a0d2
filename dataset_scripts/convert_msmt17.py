"""Convert MSMT17 (V1 or V2, read through its list files) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_msmt17.py /data/MSMT17_V1 --msmt-version v1 --out msmt17_hf
    python dataset_scripts/convert_msmt17.py /data/MSMT17_V1 --msmt-version v1 --out msmt17_pq --format parquet
    python dataset_scripts/convert_msmt17.py /data/MSMT17_V1 --msmt-version v1 --push-to-hub ORG/msmt17

list_val.txt joins the train split only with --combine-val.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("msmt17", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("msmt17", description=__doc__))

"""Convert DukeMTMC-reID to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_dukemtmc.py /data/DukeMTMC-reID --out dukemtmc_hf
    python dataset_scripts/convert_dukemtmc.py /data/DukeMTMC-reID --out dukemtmc_pq --format parquet
    python dataset_scripts/convert_dukemtmc.py /data/DukeMTMC-reID --push-to-hub ORG/dukemtmc

Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("dukemtmc", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("dukemtmc", description=__doc__))

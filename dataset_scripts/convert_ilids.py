"""Convert QMUL iLIDS (i-LIDS Pedestrian) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_ilids.py /data/i-LIDS_Pedestrian --out ilids_hf
    python dataset_scripts/convert_ilids.py /data/i-LIDS_Pedestrian --out ilids_pq --format parquet
    python dataset_scripts/convert_ilids.py /data/i-LIDS_Pedestrian --push-to-hub ORG/ilids

data_dir holds Persons/0001001.jpg ... By default query and gallery are both every image (the pools the
10 random splits draw from) and train is every image; --split-id T keeps split T only.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("ilids", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("ilids", description=__doc__))

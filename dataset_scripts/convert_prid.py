"""Convert PRID2011 single shot to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_prid.py /data/prid_2011 --out prid_hf
    python dataset_scripts/convert_prid.py /data/prid_2011 --out prid_pq --format parquet
    python dataset_scripts/convert_prid.py /data/prid_2011 --push-to-hub ORG/prid2011

data_dir holds single_shot/cam_a and single_shot/cam_b (person_0001.png ...). By default query and
gallery are the pools of the 10 random splits and train is every image; --split-id T keeps split T only.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("prid", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("prid", description=__doc__))

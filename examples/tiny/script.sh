# Run by the tiny box's test builder inside the box, in the target dir.
echo "hello from $(uname -sm) in a boxbuild box"
echo "builder arguments: $(cat argv.json)"
cat /etc/box-release > box-release.txt

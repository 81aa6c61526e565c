// Pictures people look at instead of reading numbers: the training loss curve and per-category memory bars, as SVG
// files drawn with OxyPlot.
using OxyPlot;
using OxyPlot.Axes;
using OxyPlot.Series;

namespace VkPeft.Peft.Reports;

public static class Plots
{
    /// <summary>Writes a loss-curve SVG: train loss per step and held-out loss where evaluated.</summary>
    public static void LossCurve(string path, IReadOnlyList<(int Step, double Loss)> train, IReadOnlyList<(int Step, double Loss)> eval, string title)
    {
        var model = new PlotModel { Title = title, Background = OxyColors.White, Padding = new OxyThickness(8, 16, 24, 8) };
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "step", MajorGridlineStyle = LineStyle.Dot });
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Left, Title = "loss (mean NLL per token)", MajorGridlineStyle = LineStyle.Dot });
        var t = new LineSeries { Title = "train", Color = OxyColor.FromRgb(0x1f, 0x77, 0xb4), StrokeThickness = 1.5 };
        foreach (var (s, l) in train) t.Points.Add(new DataPoint(s, l));
        model.Series.Add(t);
        if (eval.Count > 0)
        {
            var e = new LineSeries { Title = "held-out", Color = OxyColor.FromRgb(0xd6, 0x27, 0x28), StrokeThickness = 2, MarkerType = MarkerType.Circle, MarkerSize = 3 };
            foreach (var (s, l) in eval) e.Points.Add(new DataPoint(s, l));
            model.Series.Add(e);
        }
        model.Legends.Add(new OxyPlot.Legends.Legend { LegendPosition = OxyPlot.Legends.LegendPosition.TopRight, LegendBackground = OxyColor.FromAColor(220, OxyColors.White), LegendPadding = 6 });
        Save(path, model, 800, 450);
    }

    /// <summary>Writes a horizontal bar chart SVG of bytes per category (values in GiB).</summary>
    public static void MemoryBars(string path, IReadOnlyList<(string Category, double Bytes)> bars, string title)
    {
        var model = new PlotModel { Title = title, Background = OxyColors.White };
        var cat = new CategoryAxis { Position = AxisPosition.Left };
        foreach (var (c, _) in bars) cat.Labels.Add(c);
        model.Axes.Add(cat);
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "GiB", MinimumPadding = 0, AbsoluteMinimum = 0, MajorGridlineStyle = LineStyle.Dot });
        var s = new BarSeries { FillColor = OxyColor.FromRgb(0x2c, 0xa0, 0x2c), LabelFormatString = "{0:0.00}" };
        foreach (var (_, b) in bars) s.Items.Add(new BarItem(b / (1L << 30)));
        model.Series.Add(s);
        Save(path, model, 800, 60 + 40 * bars.Count);
    }

    private static void Save(string path, PlotModel model, int width, int height)
    {
        var tmp = path + ".tmp";
        using (var stream = File.Create(tmp))
            new SvgExporter { Width = width, Height = height }.Export(model, stream);
        File.Move(tmp, path, overwrite: true);
    }
}
